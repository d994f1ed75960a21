"""Test-wide settings.

kafka-python 3.0.12 loads its protocol schemas with ``importlib.resources.read_text``/``open_text``,
deprecated since Python 3.11: one DeprecationWarning per schema (hundreds per run) that only buries
the warnings that are ours. They are silenced here, for that module only.
"""


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:(read_text|open_text) is deprecated:DeprecationWarning")
