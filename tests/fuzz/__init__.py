"""The fuzzing harness kept in the project (docs/reliability.md): structure-aware mutations of the
bundled captures (``mutations``), their execution through ``kvmtrace info`` and ``analyze`` under an
address-space limit and a timeout with each outcome classified (``runner``), the comparison with
``trace-cmd report`` (``oracle``), and the corpus of past failures replayed by tests/test_fuzz_corpus.py."""
