"""The item state of the online path: one object (:class:`~adapters.online.items.table.ItemTable`) and one rule.

A learner turns a micro-batch into item contributions (:mod:`adapters.online.items.rule`); an owner merges them into
the items' rows (:meth:`ItemTable.merge <adapters.online.items.table.ItemTable.merge>`); workers apply the rows it
publishes (:meth:`ItemTable.apply <adapters.online.items.table.ItemTable.apply>`). One process alone is its own
owner (:mod:`adapters.online.items.owner`), so one code path serves a single worker, a group of workers and the
evaluation. Settings: :mod:`adapters.online.items.config`; data: :mod:`adapters.online.items.contributions` (what a
batch teaches), :mod:`adapters.online.items.rows` (what an owner publishes).
"""
