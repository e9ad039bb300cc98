"""The Optuna study CSNAS searches in: its storage, its settings fingerprint, and the seeded TPE sampler.

* Storage (``--set storage=URL``): ``sqlite:///file.db``, ``postgresql://user:pass@host/db`` (any SQLAlchemy URL
  Optuna's RDBStorage takes), or ``journal:PATH`` / a plain path (Optuna's JournalStorage on a file, safe for
  several processes on one machine or a shared file system). Default: ``OUT/csnas_study.journal``.
* Study (``--set study=NAME``; default ``csnas-<digest of the study fingerprint>``, so a search with other
  settings in the same folder gets a study of its own): created, or joined when it exists: that is how several
  ``nasdeploy search`` processes share one study. ``--resume`` insists that it exists. A named study made with
  other settings (anything that changes a trial's value or the sampler: data, seed, table, template, budgets,
  training and TPE settings) is refused; ``n_trials``, ``storage``, ``study``, ``max_rejections`` and ``threads``
  may differ (a resumed study grows).
* Sampler: Optuna's ``TPESampler`` whose random draws for trial n are seeded from (seed, n) when the trial
  starts: a single process is reproducible, and two workers never draw the same random start trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import socket
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.context import mix_seed

log = logging.getLogger(__name__)

DEFAULT_JOURNAL = "csnas_study.journal"
FINGERPRINT_ATTR = "csnas_fingerprint"
FREE_SETTINGS = ("n_trials", "storage", "study", "max_rejections", "threads")  # may differ between workers / resumes
SAMPLER_SEED = 21


def masked(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None, out_dir: Path):
    """An Optuna storage from ``url`` (None: the journal file in ``out_dir``) and a printable description."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url is None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        url = f"journal:{Path(out_dir) / DEFAULT_JOURNAL}"
    fix = "pass --set storage=journal:PATH, sqlite:///PATH.db or postgresql://user:pass@host/db"
    try:
        if "://" in url:
            return RDBStorage(url), masked(url)
        path = Path(url.removeprefix("journal:")).expanduser()
        if path.is_dir() or not path.parent.is_dir():
            raise NasDeployError(f"cannot open Optuna storage {url!r}: {'it is a folder' if path.is_dir() else 'no folder ' + str(path.parent)}; {fix}")
        return JournalStorage(JournalFileBackend(str(path))), f"journal:{path}"
    except NasDeployError:
        raise
    except Exception as exc:  # SQLAlchemy, driver, file or journal-format errors: all mean "cannot open"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise NasDeployError(f"cannot open Optuna storage {masked(url)!r} ({exc.__class__.__name__}: {reason[:160]}); {fix}") from None


def gamma_share(share: float, finished: int) -> int:
    """Optuna's gamma: how many of the finished trials form l(θ) (Eq. 5): the top ``share`` of them."""
    return max(1, math.ceil(share * finished))


def make_sampler(config, seed: int):
    """Optuna's TPESampler with the paper's settings, re-seeded from (seed, trial number) as each trial starts."""
    from optuna.samplers import TPESampler

    class TrialSeededTPESampler(TPESampler):
        def before_trial(self, study, trial) -> None:
            super().before_trial(study, trial)
            trial_seed = mix_seed(seed, SAMPLER_SEED, trial.number)
            self._rng.rng.seed(trial_seed)  # TPE's own draws (l(θ) samples, Eq. 6)
            self._random_sampler._rng.rng.seed(trial_seed)  # the random start trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Optuna 4.9+ deprecates a custom gamma (removal in 6.0)
        return TrialSeededTPESampler(
            n_startup_trials=config.n_startup_trials, n_ei_candidates=config.n_ei_candidates,
            gamma=partial(gamma_share, config.gamma), multivariate=config.multivariate,
            constant_liar=config.constant_liar, seed=mix_seed(seed, SAMPLER_SEED),
        )


def study_fingerprint(ctx) -> dict[str, Any]:
    """What must match for a process to join a study: the context's fingerprint without the free settings."""
    fingerprint = ctx.fingerprint()
    fingerprint["settings"] = {k: v for k, v in fingerprint["settings"].items() if k not in FREE_SETTINGS}
    return json.loads(json.dumps(fingerprint, default=str))


def study_name(name: str | None, fingerprint: dict[str, Any]) -> str:
    """The given name, or ``csnas-<12 hex digits>`` of the fingerprint: the same settings give the same study."""
    if name is not None:
        return name
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    return f"csnas-{digest}"


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    keys = []
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{key}.{k}" for k in differences(a, b)]
        elif a != b:
            keys.append(key)
    return keys


def open_study(storage, where: str, name: str, fingerprint: dict[str, Any], resume: bool, sampler):
    """Create the study, or join it when it exists with the same settings; ``resume`` requires that it exists."""
    import optuna
    from optuna.study import StudyDirection

    try:
        exists = name in optuna.study.get_all_study_names(storage)
    except Exception as exc:
        raise NasDeployError(f"cannot read the studies in Optuna storage {where!r} ({exc.__class__.__name__}); "
                             "pass another --set storage=...") from None
    if resume and not exists:
        raise NasDeployError(f"--resume: there is no study {name!r} in {where}; drop --resume to start it, or pass "
                             "the --set storage=... and --set study=... it was run with")
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True)
    if study.direction != StudyDirection.MINIMIZE:
        raise NasDeployError(f"study {name!r} in {where} maximises; it was not made by csnas: pass another --set study=NAME")
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None:
        if study.trials:
            raise NasDeployError(f"study {name!r} in {where} has trials but was not made by csnas; pass another --set study=NAME")
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        stored = study.user_attrs.get(FINGERPRINT_ATTR, fingerprint)
    if stored != fingerprint:
        changed = ", ".join(differences(stored, fingerprint)[:6])
        raise NasDeployError(f"study {name!r} in {where} was created with other settings ({changed}); pass the same "
                             "settings, data, seed, table and budgets, or another --set study=NAME")
    log.info("%s study %r in %s (%d trials so far)", "joined" if exists else "created", name, where, len(study.trials))
    return study


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
