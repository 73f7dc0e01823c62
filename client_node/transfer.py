"""The clinic's side of half-precision transfer (spec `transfer_dtype`, radfed.transfer).

A Flower mod, outermost around the train and evaluate handlers: it turns every
half-precision tensor of the incoming message into float32 before anything reads it
(training, evaluation, Flower's client-side clipping mods), and after the reply is
built, replaces each of those tensors in the reply by its change from the received
model, in the same dtype. The clinic never needs to know the spec's setting: it mirrors
what the server sent (a float32 message gets a float32 reply, as before), and tensors
that came float32 (BatchNorm buffers, a head-only run's backbone) go back as they are.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from radfed.transfer import decode_record, encode_update


def transfer_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Decode incoming half-precision weights; send the reply's as changes in that dtype."""
    if msg.has_error():
        return call_next(msg, context)
    received = {name: (record, decode_record(record)) for name, record in msg.content.array_records.items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    for name, record in reply.content.array_records.items():
        if name in received and received[name][1]:
            encode_update(record, received[name][0], received[name][1])
    return reply
