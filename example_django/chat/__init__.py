"""The example's chat app: a login page, a chat page, a JSON endpoint and a streamed one."""
