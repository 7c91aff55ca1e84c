"""tensorferry's conformance suite: run it against any backend, unchanged.

The suite ships in the ``tensorferry`` wheel together with a pytest plugin
(entry point ``pytest11``: ``tensorferry``) that loads in every pytest run and
stays idle until a test asks for one of its fixtures. Run it with::

    python -m pytest --pyargs tensorferry.conformance --tensorferry-backend=NAME

``--tensorferry-backend`` may be repeated; without it, every backend that loads
in ``tensorferry.Environment()`` is tested. The tests are parametrized over every
device pair ``(src, dst)`` drawn from the selected backends' devices and the
host (``cpu``) where at least one side belongs to a selected backend; test ids
read ``test_name[cpu->mybackend:0]``.

Optional capabilities (:class:`tensorferry.Filler` on a backend,
:class:`tensorferry.AsyncDataTransfer` on a transfer) are probed: tests that
need the native capability skip with a message naming it.

Backend authors can reuse the fixtures in their own tests: ``tensorferry_env``
(the session :class:`~tensorferry.Environment`), ``tensorferry_pair`` and
``tensorferry_direct_pair`` (:class:`~tensorferry.conformance.plugin.DevicePair`),
``tensorferry_device``, ``tensorferry_backend`` (a backend name),
``tensorferry_other_env`` (a second environment, for foreign tensors) and
``tensorferry_new_env`` (a factory of fresh environments closed after the test).
Disable the plugin with ``-p no:tensorferry``.
"""
