"""Ed25519 signatures of hub messages (RFC 8032) and the node's checks on them.

Why Ed25519: small keys (32 bytes, easy to paste into a config), fast verification on a Pi Zero,
deterministic signatures (no RNG failure mode).  The signature covers the exact UTF-8 bytes of the
``signed`` string, so neither side needs a canonical JSON form.

The checks here are pure: :class:`Verifier` gets the trusted keys and the set of accepted sequence
numbers from its caller (the inbox keeps them in SQLite) and answers accept or ``Rejected(reason)``.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from node.sync.protocol import REPLAY_WINDOW, SignedBody, SignedEnvelope

if TYPE_CHECKING:  # cryptography (~7 MB resident) loads at the first key, not with the daemon (issue #19)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)
B = TypeVar("B", bound=SignedBody)


class Rejected(ValueError):
    """A signed message the node must not act on; ``reason`` is one short phrase (see protocol.md)."""

    def __init__(self, reason: str, detail: str = "", body: dict | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.body = body  # the parsed (untrusted) body, when there was one: lets the node name the job
        super().__init__(f"{reason}: {detail}" if detail else reason)


def key_id(public_key_hex: str) -> str:
    return public_key_hex[:16]


def public_hex(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_public(public_key_hex: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(public_key_hex)
    except ValueError:
        raise ValueError(f"hub public key {public_key_hex[:20]!r}... is not hex") from None
    if len(raw) != 32:
        raise ValueError(f"hub public key must be 32 bytes (64 hex), got {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except Exception as exc:  # cryptography raises ValueError or its own errors for a bad point
        raise ValueError(f"not an Ed25519 public key: {exc}") from None


class SigningKey:
    """The hub's private key (PEM PKCS#8 file on disk, mode 0600)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_hex = public_hex(private_key.public_key())
        self.key_id = key_id(self.public_hex)

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(path)

    def sign(self, body: SignedBody) -> SignedEnvelope:
        return self.sign_text(body.model_dump_json())

    def sign_text(self, signed: str) -> SignedEnvelope:
        """Sign an already serialised body (tests sign malformed bodies with it)."""
        sig = self._key.sign(signed.encode())
        return SignedEnvelope(signed=signed, key_id=self.key_id, sig=base64.b64encode(sig).decode())


def check_replay(seq: int, accepted: Iterable[int], window: int = REPLAY_WINDOW) -> None:
    """Sliding-window anti-replay (RFC 4303 §3.4.3): reject a seen seq or one below the window."""
    seen = set(accepted)
    if seq in seen:
        raise Rejected("replayed", f"sequence {seq} already accepted")
    highest = max(seen, default=0)
    if seq <= highest - window:
        raise Rejected("replayed", f"sequence {seq} is older than the window (highest {highest})")


class Verifier:
    """Checks a signed hub message for one node against a set of trusted public keys."""

    def __init__(self, node_id: str, trusted_hex: Iterable[str]) -> None:
        self.node_id = node_id
        self._keys: dict[str, Ed25519PublicKey] = {}
        for public in trusted_hex:
            try:
                self._keys[key_id(public)] = load_public(public)
            except ValueError as exc:  # one bad stored key must not stop verification with the others
                log.warning("hub key %s... ignored: %s", public[:16], exc)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def open(self, payload: bytes, model: type[B], now_s: float, accepted_seqs: Iterable[int]) -> B:
        """Verify ``payload`` and return its body, or raise :class:`Rejected` naming why.

        Order matters: nothing in the body is trusted (not even for the reason) before the
        signature checks out, but the parsed body rides along on the exception so the node can
        report "job X rejected" to the hub.
        """
        body_dict = _peek_envelope(payload)
        try:
            envelope = SignedEnvelope.model_validate_json(payload)
        except ValidationError as exc:
            raise Rejected("unsigned", f"not a signed envelope ({exc.error_count()} errors)", body_dict) from None
        try:
            sig = base64.b64decode(envelope.sig, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("unsigned", "signature is not base64", body_dict) from None
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise Rejected("unknown key", f"key {envelope.key_id} is not trusted", body_dict)
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(sig, envelope.signed.encode())
        except InvalidSignature:
            raise Rejected("bad signature", "signature does not match the body", body_dict) from None
        try:
            body = model.model_validate_json(envelope.signed)
        except ValidationError as exc:
            raise Rejected("malformed", str(exc).splitlines()[0], body_dict) from None
        if body.node_id != self.node_id:
            raise Rejected("wrong node", f"addressed to {body.node_id}, this is {self.node_id}", body_dict)
        if body.expires_s < now_s:
            raise Rejected("expired", f"expired at {body.expires_s:.0f}, now {now_s:.0f}", body_dict)
        try:
            check_replay(body.seq, accepted_seqs)
        except Rejected as exc:
            exc.body = body_dict
            raise
        return body


def _peek_envelope(payload: bytes) -> dict | None:
    """The (untrusted) body inside whatever envelope arrived, if it is a JSON object; else None."""
    try:
        envelope = json.loads(payload)
        value = json.loads(envelope["signed"]) if isinstance(envelope, dict) and \
            isinstance(envelope.get("signed"), str) else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
