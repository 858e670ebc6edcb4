"""The one client of the agent's REST API: used by the CLI, the Docker driver and the CNI plugin.

- :mod:`.agent`: :class:`AgentClient`, the API's routes as calls that return JSON;
- :mod:`.errors`: the typed failures, and :func:`~.errors.refusal`, the one mapping from
  an agent's error answer to them; each adapter words these in its own protocol;
- :mod:`.transport`: the unix socket (kept-alive or one-shot, streamed or whole);
- :mod:`.wire`: the HTTP/1.1 bytes; :mod:`.codec`: JSON without ``json``'s imports.

Standard library only, and as little of it as will do: the CNI plugin imports this in
a fresh interpreter on every exec, so pyroute2, Flask, requests and bcc stay out (a
unit test checks it), as do ``http.client``, ``socket``, ``json`` and ``typing``. For the
same reason this file imports none of its modules: the plugin's VERSION exec needs only
the codec. Import from the modules themselves.
"""
