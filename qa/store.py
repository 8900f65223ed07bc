"""Moved to ``qa.index.versions``; this name stays for code that imports it from here."""

import sys

from .index import versions

sys.modules[__name__] = versions
