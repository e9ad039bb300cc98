"""``python -m nasdeploy`` = the ``nasdeploy`` command; what ``torchrun --nproc-per-node N -m nasdeploy ...`` runs."""

from nasdeploy.cli import main

if __name__ == "__main__":
    main()
