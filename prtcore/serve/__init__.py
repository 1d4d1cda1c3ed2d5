"""`prt serve`: an OpenAI-compatible HTTP server for a base model with portable rewards (extra `serve`:
starlette and uvicorn).

    models.ServedModels   the loaded models and the compositions a request may pick (prt, eft, proxy, base)
    protocol              OpenAI request fields, validated; the error object
    engine.Engine         a bounded queue and one decoding thread that batches requests of one composition
    decoding              rows of several requests stepped together (left-padded on backends with "batched")
    responses.Reply       completion / chat completion objects and their streamed chunks
    app                   the starlette routes; server: uvicorn in the foreground or in a thread
    bench                 `prt bench --serve`: throughput and latency at 1, 4 and 16 clients, batched or not

docs/serving.md describes the API and the measurements.
"""
