"""ResLab's Hydra sweepers.

`hydra/sweeper=reslab_optuna` is Hydra's Optuna sweeper with a search that survives its trials:
see `reslab_optuna_sweeper`. Like reslab_launchers, a package of the `hydra_plugins` namespace
(no `hydra_plugins/__init__.py`), so Hydra's plugin scan finds it.
"""
