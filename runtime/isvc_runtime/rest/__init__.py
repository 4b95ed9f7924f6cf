"""The HTTP layer: a raw ASGI app (:mod:`.app`) and the protocol endpoints (:mod:`.endpoints`)."""
