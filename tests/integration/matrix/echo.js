async function Run(engine) {
  engine.log.debug("first");
  engine.log.info("second");
  engine.log.error("third");
  engine.result.set("replaced");
  engine.result.set({
    name: engine.params.get("name"),
    missing: engine.params.get("nope"),
    body: engine.body,
    agent: engine.header.get("User-Agent"),
    absent: engine.header.get("X-Absent"),
  }, { statusCode: 207, contentType: "json" });
}
