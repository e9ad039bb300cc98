"""The building blocks several strategies share; a strategy's own parts live in its folder.

* DARTS space (ICDARTS, hierarchical ICDARTS, PCP-DARTS): ``darts_supernet`` (the continuous search network),
  ``discretize`` (rules, zero configurations, candidate ops), ``budget`` (the cheapest genotype, the budget
  fit-up), ``latency_control`` (the Lagrangian / fixed-δ latency term), ``objective`` (the ICDARTS objectives
  PCP-DARTS and hierarchical ICDARTS reuse, epoch means).
* Single-path supernets (SE-NAS, CTNAS): ``supernet`` (SPOS supernet, snapshot averaging, path accuracy),
  ``paths`` (paths and their costs), ``space_adapters`` (one adapter per space), ``evolution`` (SPOS evolution).
* Contrastive losses: ``contrastive`` (CSNAS), ``barlow_twins`` (SS PCP-DARTS).

The architecture drawings are the spaces' own (``spaces.cell_plot``, ``spaces.macro_plot``, ``spaces.arch_plot``).
"""
