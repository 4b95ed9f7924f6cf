"""Explanations: Captum integrated gradients on ``:explain`` (v1) and ``/explain`` (v2).

``settings`` is pure and cheap to import (the configuration reads it); :mod:`.endpoints` holds the
endpoints, :mod:`.service` who computes them.
"""
