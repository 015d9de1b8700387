"""Helpers for tests: model builders and oracles (not used by the compiler itself).

- `tte.testing.models`: seeded IR models (MobileNetV2-style network and block, a small CNN).
- `tte.testing.tflite_writer`: IR graph -> .tflite bytes (`write_tflite`), and object-API helpers to edit them.
- `tte.testing.tflm`: run .tflite bytes or IR graphs in tflite-micro, the bit-exact oracle (`run_graph`).
"""
