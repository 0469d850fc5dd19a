"""The registry's commit lock: a queue of tickets in the MLflow store, first live ticket holds.

MLflow offers one atomic operation that fits: creating a model version, whose number is the
next one and never reused. Each contender takes a ticket (a version of the model `NAME-lock`)
tagged with its process identity and a lease expiry, and holds the lock while its ticket is the
lowest live one. Only a ticket's owner ever writes it (renewing the lease, releasing it), so no
contender can remove a lock someone else has just taken; a ticket is dead when it was released
or broken by hand, when its lease ran out, or at once when it names a process of this host that
has ended. The holder renews its lease while it works, and stops with an error if its ticket was
broken meanwhile.

Fencing: a holder may be paused past its lease (a stopped process, a laptop asleep, a partition
to the store) while another contender takes the lock and commits. So a lease that ran out is
never renewed (the ticket is lost for good), and immediately before its commit point the holder
calls `fence()`, which re-reads the store and refuses unless its ticket is still the first live
one with at least a third of the lease left, by the store's record and by this process's own
clock since its last renewal.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drcl.errors import DrclError
from drcl.processes import identity, is_dead

if TYPE_CHECKING:
    from mlflow import MlflowClient

LEASE_S = 300.0
"""How long a ticket lives without renewal; the holder renews it every third of that."""
HOLDER, EXPIRES, STATE = "drcl.holder", "drcl.expires", "drcl.state"


@dataclass(frozen=True)
class Ticket:
    version: int
    holder: str
    expires: float
    state: str

    @property
    def live(self) -> bool:
        return self.state == "active" and self.expires > time.time() and not is_dead(self.holder)


class TicketLock:
    """The lock of one registry (`model` = `NAME-lock`)."""

    def __init__(self, client: MlflowClient, model: str, *, lease_s: float = LEASE_S) -> None:
        self.client = client
        self.model = model
        self.lease_s = lease_s
        self.me = identity()
        self._held: int | None = None  # the ticket while `held()` runs its block
        self._renewed_at = 0.0  # monotonic time of the last successful (re)write of its lease

    @contextmanager
    def held(self, wait_s: float) -> Iterator[None]:
        """Take a ticket, wait until it is first (up to `wait_s`), hold while the block runs."""
        ticket = self._take()
        self._renewed_at = time.monotonic()
        try:
            deadline = renewed = time.monotonic()
            deadline += wait_s
            while True:
                first = self.holder()
                if first is not None and first.version == ticket:
                    break
                if time.monotonic() > deadline:
                    held_by = first.holder if first else "nobody"
                    raise DrclError(
                        f"registry: {self.model} is held by {held_by} (a promotion or rollback "
                        f"in progress); gave up after {wait_s:g} s (registry.lock_wait_s). If "
                        f"that process is gone, `drcl unlock --holder {held_by}` breaks it")
                if time.monotonic() - renewed > self.lease_s / 3:
                    self._renew(ticket)
                    renewed = time.monotonic()
                time.sleep(0.2 + random.random() * 0.3)
            self._held = ticket
            with self._renewing(ticket):
                yield
        finally:
            self._held = None
            self._set(ticket, {STATE: "released"}, quiet=True)

    def fence(self) -> None:
        """Refuse (DrclError) unless the block that holds the lock may still commit."""
        ticket = self._held
        if ticket is None:
            raise DrclError(f"registry: committing without holding {self.model}")
        margin = self.lease_s / 3
        if time.monotonic() - self._renewed_at > self.lease_s - margin:
            why = "this process was paused past its lease"
        else:
            tickets = {t.version: t for t in self.tickets()}
            mine, first = tickets.get(ticket), self.holder()
            if mine is None or mine.state != "active":
                why = "it is gone" if mine is None else mine.state
            elif first is None or first.version != ticket:
                why = f"now held by {first.holder if first else 'nobody'}"
            elif mine.expires - time.time() < margin:
                why = "its lease ran out"
            else:
                return
        raise DrclError(f"registry: lost the {self.model} ticket {ticket} before committing "
                        f"({why}); nothing was committed: run it again")

    def tickets(self) -> list[Ticket]:
        """Every ticket in the store, lowest first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.model}'")
        except MlflowException:
            return []
        out = []
        for v in found:
            tags = v.tags or {}
            try:
                expires = float(tags.get(EXPIRES, "0"))
            except ValueError:
                expires = 0.0
            out.append(Ticket(int(v.version), tags.get(HOLDER, "?"), expires,
                              tags.get(STATE, "active")))
        return sorted(out, key=lambda t: t.version)

    def holder(self) -> Ticket | None:
        """The ticket that holds the lock now, if any."""
        return next((t for t in self.tickets() if t.live), None)

    def break_held(self, holder: str) -> Ticket:
        """Break the live ticket of `holder` by hand (its process died where we cannot see)."""
        for ticket in self.tickets():
            if ticket.live and ticket.holder == holder:
                self._set(ticket.version, {STATE: f"broken by {self.me}"})
                return ticket
        live = [t.holder for t in self.tickets() if t.live]
        raise DrclError(f"registry: {self.model} has no live ticket of {holder!r} (live: "
                        f"{', '.join(live) or 'none'})")

    def _take(self) -> int:
        from mlflow.exceptions import MlflowException

        try:
            try:
                self.client.create_registered_model(
                    self.model, description="drcl's commit lock: one version per ticket")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            self._clean()
            version = self.client.create_model_version(
                self.model, "drcl-lock://registry/ticket",
                tags={HOLDER: self.me, EXPIRES: str(time.time() + self.lease_s),
                      STATE: "active"})
        except MlflowException as exc:
            raise DrclError(f"registry: taking {self.model} failed "
                            f"({str(exc).splitlines()[0]})") from None
        return int(version.version)

    def _renew(self, ticket: int) -> None:
        tags = {t.version: t for t in self.tickets()}
        mine = tags.get(ticket)
        if mine is None or mine.state != "active" or mine.expires <= time.time():
            why = ("it is gone" if mine is None else mine.state if mine.state != "active"
                   else "its lease ran out: another process may hold it since")
            raise DrclError(f"registry: lost the {self.model} ticket {ticket} ({why}); nothing "
                            "was committed after that")
        try:
            self._set(ticket, {EXPIRES: str(time.time() + self.lease_s)})
        except Exception as exc:  # noqa: BLE001 - the store's own error types vary
            raise DrclError(f"registry: renewing the {self.model} ticket failed ({exc})") \
                from None
        self._renewed_at = time.monotonic()

    @contextmanager
    def _renewing(self, ticket: int) -> Iterator[None]:
        """Renew the lease in the background while the holder works."""
        stop = threading.Event()
        lost: list[BaseException] = []

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    self._renew(ticket)
                except Exception as exc:  # noqa: BLE001 - reported by the holder below
                    lost.append(exc)
                    return

        thread = threading.Thread(target=renew, name="drcl-lock-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if lost:
            raise DrclError(str(lost[0])) if isinstance(lost[0], DrclError) else lost[0]

    def _set(self, ticket: int, tags: dict[str, str], *, quiet: bool = False) -> None:
        from mlflow.exceptions import MlflowException

        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.model, str(ticket), key, value)
        except MlflowException:
            if not quiet:
                raise

    def _clean(self) -> None:
        """Delete dead tickets below the highest one, so the list stays short. Deleting never
        changes who holds: a dead ticket holds nothing, and numbers are never reused."""
        from mlflow.exceptions import MlflowException

        tickets = self.tickets()
        for ticket in tickets[:-1]:
            if not ticket.live:
                with suppress(MlflowException):  # someone else cleaned it
                    self.client.delete_model_version(self.model, str(ticket.version))
