"""Run by Python at start-up (site.py imports it from the path): collections' old aliases, for sagemaker_containers.

sagemaker_containers 2.8.6.post2 (the toolkit of the XGBoost images) subclasses `collections.Mapping`, which Python
3.10 removed; the images run Python 3.8 and 3.9, where it still exists. The aliases are added only where missing.
"""

import collections
import collections.abc

for _name in ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable", "Callable", "Set",
              "MutableSet", "Hashable", "Sized", "Container", "Iterator", "KeysView", "ValuesView", "ItemsView"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
