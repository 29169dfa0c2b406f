"""Make tests/reference_engine.py and the helpers next to this file importable.

The test tree has no ``__init__.py`` files, so pytest only puts this directory on sys.path
(and only in the default "prepend" import mode). Adding both directories explicitly keeps
``import reference_engine`` / ``import engine_scenarios`` working in any import mode.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
