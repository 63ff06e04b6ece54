"""Helpers shared by the test files: tiny models, the tiny trainer backbone, and scripts that
run in a child process (runtime.py builds the test models, mediapipe_check.py runs MediaPipe)."""
