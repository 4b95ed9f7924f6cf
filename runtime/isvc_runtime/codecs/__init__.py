"""Protocol codecs: request bodies → handler rows, handler answers → response bodies. Pure functions."""
