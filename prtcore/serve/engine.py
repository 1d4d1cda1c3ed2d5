"""The server's engine: a bounded queue of jobs and one thread that decodes them, in batches where it can.

Whenever the thread is free it takes the oldest waiting job and every other waiting job of the same composition,
up to `max_batch`, and decodes them together (prtcore.serve.decoding); jobs that arrive meanwhile wait for the
next batch. With `max_batch=1` (a backend without capability "batched") jobs run one at a time, in order.
A cancelled job (its client left, or its time ran out) leaves the queue at once, or stops being decoded.
"""

from __future__ import annotations

import threading
from collections import deque

from ..errors import PRTError
from .decoding import Failure, Job, decode_jobs


class Overloaded(PRTError):
    """The queue is full."""


class Stopped(PRTError):
    """The engine is shutting down."""


class Engine:
    def __init__(self, *, max_batch: int = 16, max_queue: int = 64, lock=None, end_thread=None):
        """`end_thread`: called by the engine's thread as it ends (the backend's `end_thread`)."""
        self.max_batch, self.max_queue, self.end_thread = max_batch, max_queue, end_thread
        self.lock = lock or threading.Lock()
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.batches = self.largest = 0  # batches decoded so far, and the most jobs one held
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="prt-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, fail the jobs still waiting, end the thread."""
        with self._changed:
            self._stopping = True
            left, self.waiting = list(self.waiting), deque()
            self._changed.notify_all()
        for job in left:
            job.emit(Failure(Stopped("the server is shutting down")))
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, job: Job) -> None:
        with self._changed:
            if self._stopping:
                raise Stopped("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise Overloaded(f"{len(self.waiting)} requests are waiting (--max-queue {self.max_queue}); retry later")
            self.waiting.append(job)
            self._changed.notify()

    def cancel(self, job: Job) -> None:
        """Stop `job`: out of the queue if it waits there, else dropped from its batch at the next step."""
        job.cancelled.set()
        with self._changed:
            if job in self.waiting:
                self.waiting.remove(job)

    def _take(self) -> list[Job]:
        first = self.waiting.popleft()
        batch = [first]
        for job in list(self.waiting):
            if len(batch) >= self.max_batch:
                break
            if job.key == first.key:
                batch.append(job)
                self.waiting.remove(job)
        return batch

    def _loop(self) -> None:
        try:
            self._decode_until_stopped()
        finally:
            if self.end_thread is not None:
                self.end_thread()

    def _decode_until_stopped(self) -> None:
        while True:
            with self._changed:
                while not self.waiting and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                batch = self._take()
                self.running = len(batch)
                self.largest = max(self.largest, len(batch))
            try:
                decode_jobs(batch, self.lock)
            except Exception as e:  # a model error fails this batch; the server goes on
                for job in batch:
                    job.emit(Failure(e))
            finally:
                with self._changed:
                    self.running = 0
                    self.batches += 1
