"""What happens after a commit: steps a unit of work registers (enqueue a run, signal its end,
schedule its callback, archive its logs), the outbox that makes the durable ones survive a
crash, the one failure policy, and the sweeper that retries or expires what is left."""
