"""The Docker libnetwork adapter: a remote NetworkDriver and IpamDriver in front of the agent.

It runs as its own process (``cilium-py-docker``) so that dockerd's plugin calls never
share a fate with the agent: each call becomes one or two agent API calls and its answer
is translated back into libnetwork's JSON. Modules, one concern each:

- :mod:`.protocol`: libnetwork's names and the one error path (``{"Err": ...}``);
- :mod:`.agent_api`: the agent's REST API, answering with the agent's exceptions;
- :mod:`.state`: the little the driver must remember, in a JSON file;
- :mod:`.ipam` and :mod:`.network`: the two drivers, plain classes over data;
- :mod:`.ports`: published ports as iptables DNAT rules in our own chains;
- :mod:`.app`, :mod:`.server`, :mod:`.main`: Flask routes, gunicorn, the command;
- :mod:`.labels`: the container label watcher that the *agent* runs.
"""
