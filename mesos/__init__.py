"""Mesos and Marathon glue: the CNI isolator's network config and its installation.

The plugin itself is :mod:`cilium_py.cni`; Mesos' NetworkInfo labels become ``mesos:``
endpoint labels there (:mod:`cilium_py.cni.args`).
"""
