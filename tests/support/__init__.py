"""Test support shared by the whole suite: loopback servers, service processes, free ports."""
