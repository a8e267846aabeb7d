"""``python -m example_flask``: serve the example on 127.0.0.1 (port 5000, or ``PORT``)."""

from __future__ import annotations

import os

from example_flask import DEMO_PASSWORD, DEMO_USERNAME, EVENTS_FILE, create_app


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    app = create_app()
    print(f"Demo user: {DEMO_USERNAME} / {DEMO_PASSWORD}")
    if os.environ.get("POSTHOG_API_KEY"):
        print("Events go to PostHog.")
    else:
        print(f"No POSTHOG_API_KEY: events are written to {EVENTS_FILE}")
    print(
        f"Try: curl -c /tmp/jar -d username={DEMO_USERNAME} -d password={DEMO_PASSWORD} "
        f"http://127.0.0.1:{port}/login\n"
        f"     curl -b /tmp/jar -d 'message=What is the weather in Paris?' "
        f"http://127.0.0.1:{port}/chat\n"
        f"     curl -N -b /tmp/jar 'http://127.0.0.1:{port}/chat/stream?message=hi'"
    )
    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
