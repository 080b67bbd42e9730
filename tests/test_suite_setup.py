"""The test suite's own machinery: what makes the other tests able to fail."""
from __future__ import annotations


def test_timeout_plugin_is_active(pytestconfig):
    # Without pytest-timeout the `timeout` marks and the ini default do nothing and a hung
    # decoder would stall CI for its whole budget.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) > 0
