"""The monitor: events from the datapath, the proxies and the agent, fanned out to clients.

A package of its own because both the agent (which publishes) and the API (which
streams to ``cilium-py monitor``) use it; neither imports the other for it.
"""
