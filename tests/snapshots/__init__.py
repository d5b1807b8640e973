"""SVG snapshot tests of every screen, at the two terminal sizes the issues name."""

import pytest

#: Every snapshot is taken at both: an SSH session's 80x24 and a large terminal.
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
