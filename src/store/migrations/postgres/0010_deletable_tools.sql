-- Tools can be deleted (DELETE /v1/tools/{name}), and with a tool its lifted kill switch.
-- Nothing else of a tool's history is deleted: its actions, approvals and audit events stay.
GRANT DELETE ON tools, killswitches TO countersign_server;
