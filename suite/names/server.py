"""
The name server's behaviour behind the AMP commands: token check, registry,
store writes and the audit trail (structured twisted.logger events with
`names_event` = register, deregister, evict or lookup).
"""

import hmac

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from suite.names.commands import Invalid, NotFound, Unauthorized
from suite.names.registry import Registry, RegistryFull

log = Logger()


class NameServer(service.Service):
    """Owns the registry and the store; as a service it closes the store last, writes finished."""

    def __init__(self, registry: Registry, store, token: str, cache_ttl: int):
        self.registry = registry
        self.store = store
        self.token = token.encode()
        self.cache_ttl = cache_ttl
        self._writes: set[defer.Deferred] = set()
        for name, host, port, description in store.load():
            registry.register(name, host, port, description)

    def _authorize(self, token):
        given = (token or "").encode()
        if self.token and not hmac.compare_digest(given, self.token):
            raise Unauthorized("a valid token is needed to change registrations")

    def _write(self, d: defer.Deferred):
        self._writes.add(d)

        def done(result):
            self._writes.discard(d)
            if isinstance(result, defer.Failure):
                log.failure("names: store write failed", result)

        d.addBoth(done)

    def register(self, name, host, port, description, token, peer) -> dict:
        self._authorize(token)
        try:
            instance, new = self.registry.register(name, host, port, description or "")
        except RegistryFull as e:
            raise Invalid(str(e)) from None
        self._write(self.store.save(instance))
        log.info(
            "names: register {name} {host}:{port} ({change}) from {peer}",
            names_event="register", name=name, host=host, port=port,
            description=instance.description, change="new" if new else "update", peer=peer,
        )
        return {}

    def deregister(self, name, host, port, token, peer) -> dict:
        self._authorize(token)
        instance = self.registry.deregister(name, host, port)
        if instance is None:
            raise NotFound(f"no instance {name} at {host}:{port}")
        self._write(self.store.delete(instance))
        log.info(
            "names: deregister {name} {host}:{port} from {peer}",
            names_event="deregister", name=name, host=host, port=port, peer=peer,
        )
        return {}

    def evicted(self, instance, reason):
        self._write(self.store.delete(instance))
        log.info(
            "names: evict {name} {host}:{port} after {failures} failed pings: {reason}",
            names_event="evict", name=instance.name, host=instance.host, port=instance.port,
            failures=instance.failures, reason=reason,
        )

    def lookup(self, name, peer) -> dict:
        instances = self.registry.lookup(name)
        log.info(
            "names: lookup {name} from {peer}: {answers} answers",
            names_event="lookup", name=name, peer=peer, answers=len(instances),
        )
        if not instances:
            raise NotFound(f"no live instance of {name}")
        return {
            "instances": [
                {"host": i.host, "port": i.port, "description": i.description} for i in instances
            ],
            "ttl": self.cache_ttl,
        }

    def services(self) -> dict:
        return {"names": self.registry.names()}

    def stopService(self):
        service.Service.stopService(self)
        writes = defer.DeferredList(list(self._writes))
        return writes.addBoth(lambda _: self.store.close())
