"""The local stack behind ``make run``: the supervisor (``run``), the scripted stand-in agent and ``status``."""
