"""Delivery: getting PostHog events out of the process.

The delivery layer knows nothing of spans. It moves opaque *items* and turns each into a list of
PostHog event dicts with a ``render`` function that the core hands it, so that mapping,
serialisation, compression and HTTP all happen off the caller's thread.

- :mod:`.base`: the :class:`Exporter` protocol and the :class:`Item` protocol.
- :mod:`.http`: the HTTP transport that speaks PostHog's capture API.
- :mod:`.thread`: the background batching exporter (the default).
- :mod:`.sinks`: inline (``sync``), development (``console``, ``file``) and test (``memory``) sinks.
- :mod:`.celery`: hands batches to a Celery worker task.
"""
