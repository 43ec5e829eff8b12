"""Ed25519 manifests and commands: every way a message can be bad is refused, with its reason."""
from __future__ import annotations

import base64
import json

import pytest

from node.sync import protocol as p
from node.sync.signing import Rejected, SigningKey, Verifier, check_replay

NOW = 1_750_000_000.0


def manifest(seq: int = 1, node_id: str = "n1", expires_s: float = NOW + 3600) -> p.JobManifest:
    return p.JobManifest(node_id=node_id, seq=seq, issued_s=NOW, expires_s=expires_s, hub_time_s=NOW,
                         job_id="job1", name="part", file_sha256="a" * 64, file_bytes=10)


def open_(verifier: Verifier, payload: bytes, seqs=()) -> p.JobManifest:
    return verifier.open(payload, p.JobManifest, NOW, seqs)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def reason(verifier: Verifier, payload: bytes, seqs=()) -> str:
    with pytest.raises(Rejected) as info:
        open_(verifier, payload, seqs)
    return info.value.reason


def test_a_good_manifest_opens(key: SigningKey):
    env = key.sign(manifest())
    assert open_(Verifier("n1", [key.public_hex]), env.model_dump_json().encode()) == manifest()


def test_tampered_unsigned_unknown_key_wrong_node_expired_and_replayed_are_rejected(key: SigningKey):
    verifier = Verifier("n1", [key.public_hex])
    env = key.sign(manifest())
    tampered = env.model_copy(update={"signed": env.signed.replace('"file_bytes":10', '"file_bytes":11')})
    assert reason(verifier, tampered.model_dump_json().encode()) == "bad signature"
    assert reason(verifier, manifest().model_dump_json().encode()) == "unsigned"
    no_sig = env.model_copy(update={"sig": "!!!"})
    assert reason(verifier, no_sig.model_dump_json().encode()) == "unsigned"
    other = SigningKey.generate()
    assert reason(verifier, other.sign(manifest()).model_dump_json().encode()) == "unknown key"
    forged = other.sign(manifest()).model_copy(update={"key_id": key.key_id})
    assert reason(verifier, forged.model_dump_json().encode()) == "bad signature"
    assert reason(verifier, key.sign(manifest(node_id="n2")).model_dump_json().encode()) == "wrong node"
    assert reason(verifier, key.sign(manifest(expires_s=NOW - 1)).model_dump_json().encode()) == "expired"
    assert reason(verifier, env.model_dump_json().encode(), seqs=[1]) == "replayed"
    assert reason(verifier, b"\xff\x00garbage") == "unsigned"


def test_rejection_carries_the_body_so_the_node_can_name_the_job(key: SigningKey):
    with pytest.raises(Rejected) as info:
        open_(Verifier("n1", [key.public_hex]), key.sign(manifest(expires_s=NOW - 5)).model_dump_json().encode())
    assert info.value.body["job_id"] == "job1"


def test_replay_window_accepts_reordered_sequences_but_not_old_ones():
    check_replay(5, [1, 2, 3, 7])  # late but inside the window: fine
    with pytest.raises(Rejected):
        check_replay(7, [7])
    with pytest.raises(Rejected):
        check_replay(10, [10 + p.REPLAY_WINDOW])


def test_signature_covers_the_exact_bytes(key: SigningKey):
    env = key.sign(manifest())
    reordered = json.dumps(dict(reversed(list(json.loads(env.signed).items()))))
    sig_ok = base64.b64decode(env.sig)
    assert len(sig_ok) == 64
    assert reason(Verifier("n1", [key.public_hex]),
                  env.model_copy(update={"signed": reordered}).model_dump_json().encode()) == "bad signature"
