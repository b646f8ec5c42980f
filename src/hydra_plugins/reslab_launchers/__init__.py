"""ResLab's Hydra launchers.

`hydra/launcher=node_parallel` runs the jobs of a multirun side by side on one node, each in
its own process with its own GPU(s) (see `node_parallel_launcher`); other Hydra apps name it
`hydra/launcher=reslab_node_parallel`. Hydra finds this package
because `hydra_plugins` is a namespace package shared by all installed plugins: there must be
no `hydra_plugins/__init__.py`.
"""
