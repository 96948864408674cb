"""The job API (FastAPI). Never imports torch: it validates, compiles canvases and enqueues job ids."""
