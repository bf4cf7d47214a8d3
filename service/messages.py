"""The gateway's messages as the HTTP API's JSON shapes, through protobuf's own JSON mapping.

The gRPC servicers and the gRPC client transport both convert here, so a field added to a
``.proto`` reaches every side without another hand-written copy. Two things the plain mapping
does differently from the HTTP API are evened out: 64-bit integers become numbers rather than
strings, and an unset field that has presence (``optional``, a oneof member) becomes None.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def to_dict(message: Message, defaults: bool = True) -> dict:
    """``message`` as a JSON-shaped dict; with ``defaults`` every field is present, otherwise
    fields left at their default are omitted (a request's "use the server default")."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=defaults)
    return _plain(message.DESCRIPTOR, data, defaults)


def from_dict(data: dict, message_class: type[Message], ignore_unknown: bool = False) -> Message:
    """A message from a JSON-shaped dict; None means unset. Raises ``json_format.ParseError``
    for a value of the wrong type, and for a key the message lacks unless ``ignore_unknown``."""
    return json_format.ParseDict({k: v for k, v in data.items() if v is not None}, message_class(),
                                 ignore_unknown_fields=ignore_unknown)


def _plain(descriptor: Descriptor, data: dict, defaults: bool) -> dict:
    for field in descriptor.fields:
        if field.name not in data:
            if defaults and field.has_presence and not field.is_repeated:
                data[field.name] = None
            continue
        value = data[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            data[field.name] = {key: _value(entry, item, defaults) for key, item in value.items()}
        elif field.is_repeated:
            data[field.name] = [_value(field, item, defaults) for item in value]
        else:
            data[field.name] = _value(field, value, defaults)
    return data


def _value(field: FieldDescriptor, value, defaults: bool):
    if field.type in _INT64:
        return int(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, dict):
        return _plain(field.message_type, value, defaults)
    return value
