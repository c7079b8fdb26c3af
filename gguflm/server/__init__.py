"""The OpenAI-compatible HTTP server with continuous batching (`gguflm serve`).

protocol.py   request and response bodies, field by field as OpenAI's API has them
errors.py     the one helper that builds OpenAI's error object
sequence.py   a Sequence per request: prompt ids, slot, sampler, stop rules, output
slots.py      which cache slot a prompt takes (the longest cached prefix)
scheduler.py  the waiting queue and the running batch
worker.py     the thread that owns the engine: prefill, batched decode steps, sampling
metrics.py    Prometheus counters and gauges
app.py        the starlette routes
serve.py      load a model and run it under uvicorn
"""
