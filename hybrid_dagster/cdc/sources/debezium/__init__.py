"""Debezium change events from JSON-lines files or Kafka.

Path of a change: :mod:`.files` / :mod:`.kafka` read a record -> :mod:`.records` (file line layouts) ->
:mod:`.envelope` parses the event (positions, ops) with :mod:`.types` (Kafka Connect types -> Arrow) ->
:mod:`.batch` groups it into the change batch; :mod:`.offsets` keeps the file source's acknowledged offset.
"""
