"""Adapters for trainers, each behind its own extra.

* :mod:`torchdht.integrations.lightning`: ``pip install "torchdht[lightning]"``
* :mod:`torchdht.integrations.transformers`: ``pip install "torchdht[transformers]"``

``import torchdht`` never imports them; importing an adapter without its
package raises one clear line naming the extra.
"""
