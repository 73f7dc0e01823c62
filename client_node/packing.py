"""The clinic's side of packed transport (radfed.packing): unpack what arrives, pack what leaves.

A Flower mod around every handler of the ClientApp. A message whose model came packed
is unpacked before anything reads it, and the reply's arrays are packed the same way;
a message that came unpacked gets an unpacked reply (it mirrors the server). The
outbox log and every handler below see ordinary records.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from radfed.packing import pack_message_records, unpack_message_records


def packing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack the incoming message's packed records; pack the reply's if it came packed."""
    packed = not msg.has_error() and unpack_message_records(msg.content)
    reply = call_next(msg, context)
    if packed and not reply.has_error():
        pack_message_records(reply.content, {})
    return reply
