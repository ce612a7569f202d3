"""File formats, standard library only, shared by the recorder (which runs on small targets), the
readers and the simulator: the trace.dat layout (tracedat), the one tracefs format-file parser
(formats), the trace.dat writer (writer), and the capture.json manifest (manifest)."""
