"""WinRM transport and WindowsMachine tests against the WS-Management test server in server/."""
