"""The nightly run: soak, chaos, fuzz and every benchmark, with a report (issue 18).

Scripts, not tests (pytest collects nothing here): ``packaging/install.sh nightly`` runs
``python -m tests.nightly.run``. Everything runs in namespaces, state directories, chains
and sockets of its own, as the tests do.
"""
