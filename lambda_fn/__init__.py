"""The Lambda API: Generate Code & PR → branch, TASK.md, pull request, job; the job's end → a comment on the PR.

``lambda_fn.handler.handler`` is the Lambda entry (Mangum around the FastAPI app built in ``lambda_fn.app``);
``python -m lambda_fn`` serves the same app under uvicorn. Nothing here runs an agent or touches a work tree:
the PR processor does that.
"""
