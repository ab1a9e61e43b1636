// The API docs: Swagger UI (from the swagger-ui-bundle package) on /openapi.json.
// NOTE: "Try it out" sends real requests to this service, with the key given under Authorize.
SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#api",
  deepLinking: true,
  tryItOutEnabled: false,
  validatorUrl: null, // the public validator is another origin: never called
});
