"""The HTTP side of `prt serve`: an OpenAI-compatible starlette app over an Engine.

    GET  /v1/models, /v1/models/{id}   the served model, its rewards and compositions
    POST /v1/completions               text or token ids in, text out
    POST /v1/chat/completions          messages (and `tools`) through the chat template
    GET  /health                       queue and batch counts (no API key needed)

Streaming is by server-sent events ("data: {chunk}" lines, then "data: [DONE]"). Bad input gets a 4xx with
OpenAI's error object; a full queue a 503; a request past its time a 504 (or an error event once streaming).
A client that disconnects frees its place in the queue, or its row of a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
import traceback

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..errors import PRTError
from .decoding import Failure, Job
from .engine import Engine, Overloaded, Stopped
from .models import ContextWindowError, ServedModels
from .protocol import APIError, Request, invalid, parse
from .responses import Reply

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(Exception):
    """The client closed the connection before its answer was complete."""


class Service:
    """The routes' state: the models, the engine and the limits."""

    def __init__(self, served: ServedModels, engine: Engine, *, api_key: str | None = None,
                 max_body: int = 1 << 20, timeout: float = 600.0, max_tokens: int = 256):
        self.served, self.engine, self.api_key = served, engine, api_key
        self.max_body, self.timeout, self.max_tokens = max_body, timeout, max_tokens

    # ---------------------------------------------------------------------------------------------- routes
    async def models(self, request: HTTPRequest):
        self.authorize(request)
        if "model" in request.path_params:
            return JSONResponse(self.model_entry(request.path_params["model"]))
        return JSONResponse({"object": "list", "data": [self.served.describe()]})

    async def health(self, request: HTTPRequest):
        engine = self.engine
        return JSONResponse({"status": "ok", "waiting": len(engine.waiting), "running": engine.running,
                             "batches": engine.batches, "largest_batch": engine.largest})

    async def completions(self, request: HTTPRequest):
        return await self.generate(request, "completion")

    async def chat(self, request: HTTPRequest):
        return await self.generate(request, "chat")

    # ---------------------------------------------------------------------------------------------- generation
    async def generate(self, http: HTTPRequest, kind: str):
        self.authorize(http)
        request = parse(await self.body(http), kind)
        self.model_entry(request.model)
        job, prompt_tokens = await run_in_threadpool(self.job, request)  # a long prompt does not stall the others
        reply = Reply(kind, self.served.name, prompt_tokens, self.token_text, request.logprobs is not None)
        tokens = self.tokens(job, self.submit(job), http)
        if request.stream:
            return StreamingResponse(self.stream(request, reply, tokens), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return await self.whole(reply, tokens)

    def job(self, request: Request) -> tuple[Job, int]:
        """The engine's job for a request (prompt encoded, composition chosen), and the prompt's length."""
        served = self.served
        with self.engine.lock:  # the tokenizer is shared with the engine's thread
            try:
                key, model = served.model(request.compose, request.rewards)
            except PRTError as e:
                raise invalid("rewards" if str(e).startswith("rewards") else "compose", str(e)) from None
            param = "messages" if request.kind == "chat" else "prompt"
            try:
                if request.kind == "chat":
                    ids = served.chat_prompt(request.prompt, request.tools)
                else:
                    ids = served.text_prompt(model, request.prompt)
                left = served.window_left(model, ids)
            except ContextWindowError as e:
                raise invalid(param, str(e), "context_length_exceeded") from None
            except PRTError as e:
                raise invalid(param, str(e)) from None
            except Exception as e:  # a chat template that refuses these messages
                raise invalid(param, f"{param}: the chat template failed: {e}") from None
        stop = request.stop
        if request.kind == "chat" and served.end_of_turn and served.end_of_turn not in stop:
            stop = (*stop, served.end_of_turn)
        budget = self.max_tokens if request.max_tokens is None else request.max_tokens
        budget = budget if left is None else min(budget, left)
        return Job(model, key, ids, request.sampler, budget, stop, request.logprobs), len(ids)

    def submit(self, job: Job) -> asyncio.Queue:
        """Queue `job`; its events arrive on the returned asyncio queue."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event):
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, event)

        job.emit = emit
        try:
            self.engine.submit(job)
        except Overloaded as e:
            raise APIError(503, str(e), code="overloaded", type="server_overloaded") from None
        except Stopped as e:
            raise APIError(503, str(e), code="shutting_down") from None
        return events

    async def tokens(self, job: Job, events: asyncio.Queue, http: HTTPRequest):
        """The job's Tokens until its last; APIError on failure or timeout, ClientGone when the client leaves.
        Whatever ends it, the job is cancelled (a no-op once it has finished)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        gone = asyncio.ensure_future(disconnected(http))
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({get, gone}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    if gone in done:
                        raise ClientGone()
                    raise APIError(504, f"the request took longer than {self.timeout:g} s (--request-timeout)",
                                   code="timeout", type="timeout_error")
                event = get.result()
                if isinstance(event, Failure):
                    raise failure(event.error)
                yield event
                if event.finish_reason:
                    return
        finally:
            gone.cancel()
            self.engine.cancel(job)

    async def whole(self, reply: Reply, tokens):
        try:
            async for token in tokens:
                reply.add(token)
        except ClientGone:
            return JSONResponse({}, status_code=499)  # nobody reads it
        return JSONResponse(reply.response())

    async def stream(self, request: Request, reply: Reply, tokens):
        try:
            for chunk in reply.opening():
                yield sse(chunk)
            async for token in tokens:
                reply.add(token)
                for chunk in reply.chunks(token):
                    yield sse(chunk)
            if request.include_usage:
                yield sse(reply.usage_chunk())
        except ClientGone:
            return
        except APIError as e:
            yield sse(e.body())
        yield "data: [DONE]\n\n"

    # ---------------------------------------------------------------------------------------------- helpers
    def authorize(self, http: HTTPRequest) -> None:
        if self.api_key is None:
            return
        scheme, _, key = http.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "invalid or missing API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def body(self, http: HTTPRequest) -> bytes:
        """The request body, refused with a 413 past `max_body` bytes (by its Content-Length, or as it streams)."""
        too_large = APIError(413, f"the request body is larger than {self.max_body} bytes (--max-body)",
                             code="request_too_large")
        length = http.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise too_large
        parts, size = [], 0
        async for part in http.stream():
            size += len(part)
            if size > self.max_body:
                raise too_large
            parts.append(part)
        return b"".join(parts)

    def model_entry(self, name: str) -> dict:
        if name != self.served.name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.served.name!r}",
                           param="model", code="model_not_found")
        return self.served.describe()

    def token_text(self, token: int) -> str:
        with self.engine.lock:
            return self.served.tokenizer.decode([token])


async def disconnected(http: HTTPRequest) -> None:
    """Returns when the client has closed the connection (the body has been read by then)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def failure(error: BaseException) -> APIError:
    if isinstance(error, Stopped):
        return APIError(503, str(error), code="shutting_down")
    if isinstance(error, PRTError):
        return APIError(400 if isinstance(error, ValueError) else 500, str(error))
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    return APIError(500, f"the model failed: {type(error).__name__}: {error}")


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(service: Service) -> Starlette:
    """The starlette app of `service`; its engine runs from startup to shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.engine.stop)

    async def api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                     code=code).body(), status_code=exc.status_code)

    async def server_error(request, exc: Exception):
        return JSONResponse(failure(exc).body(), status_code=500)

    routes = [
        Route("/v1/models", service.models, methods=["GET"]),
        Route("/v1/models/{model:path}", service.models, methods=["GET"]),
        Route("/v1/completions", service.completions, methods=["POST"]),
        Route("/v1/chat/completions", service.chat, methods=["POST"]),
        Route("/health", service.health, methods=["GET"]),
    ]
    handlers = {APIError: api_error, HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.service = service
    return app

