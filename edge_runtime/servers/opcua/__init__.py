"""The node's OPC UA server for BMS clients (issue 12): the process image as variables,
methods and writes into the command queue, users and roles, alarms and history."""
