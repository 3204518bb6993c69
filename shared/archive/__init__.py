"""The archive tier (issue 17): years of events kept at archive cost, read by replays as if they
were still in the event table.

* ``stores``: where segment files live, a filesystem URL (``file://``, ``s3://``);
* ``segments``: the Parquet files themselves, written, verified and read;
* ``mover``: moving events between the tiers, each segment in one crash-safe step
  (``replay archive``, ``replay unarchive``);
* ``staging``: the archived events a planning or a slice needs, staged beside the event table
  so that the source's queries read both as one.
"""
