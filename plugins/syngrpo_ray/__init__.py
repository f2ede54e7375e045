"""The ``ray`` backend and transport of the data server: synthesis replicas on a Ray cluster (extra ``ray``)."""
