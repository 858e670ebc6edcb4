"""The CNI plugin (``cilium-py-cni``): a thin, fast-starting adapter in front of the agent.

``main`` (process and stdout discipline) -> ``invocation`` (CNI_* and stdin config) ->
``commands`` (one agent call per command, via :mod:`cilium_py.client`) -> ``result``
(the answer in the config's spec version). ``errors`` holds the CNI codes and the one
mapping from the client's typed failures to them; ``args`` turns CNI_ARGS,
``args.cni.labels`` and Mesos' NetworkInfo into endpoint labels; ``check``/``netns_path``
serve CHECK; ``install`` writes the launcher and conflist. Nothing here imports Flask,
requests or bcc: every exec pays for its imports.
"""
