"""Test harnesses shared by tether's test suite.

- :mod:`helpers.browser`: drive headless Chromium through chromedriver (W3C WebDriver, stdlib).
- :mod:`helpers.node`: Node's ``ws`` package as an interop server or client.
- :mod:`helpers.demo`: tether's demo server in a thread, recording what it saw.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so tests import these as ``helpers.…``,
and provides the ``browser`` and ``node_ws`` fixtures and the matching markers.
"""
