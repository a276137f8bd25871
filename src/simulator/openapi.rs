//! `GET /openapi.json`: the OpenAPI description of the 50 upstream routes, built with utoipa from
//! the same route table the router is built from, and the wire types' derived schemas.

use std::sync::OnceLock;

use axum::Json;
use axum::http::Method;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};

use super::routes::table;
use super::wire::*;

fn schema_ref(name: &str) -> RefOr<Schema> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(item) => ArrayBuilder::new().items(Ref::from_schema_name(item)).build().into(),
        None => Ref::from_schema_name(name).into(),
    }
}

fn method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// Builds the description (once; it never changes while running).
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = PathsBuilder::new();
        for route in table() {
            let mut op = OperationBuilder::new()
                .summary(Some(route.summary))
                .operation_id(Some(format!("{} {}", route.method, route.path)));
            for segment in route.path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    op = op.parameter(
                        ParameterBuilder::new()
                            .name(name)
                            .parameter_in(ParameterIn::Path)
                            .required(Required::True)
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                    );
                }
            }
            if let Some(req) = route.request {
                op = op.request_body(Some(
                    RequestBodyBuilder::new()
                        .required(Some(Required::True))
                        .content("application/json", ContentBuilder::new().schema(Some(schema_ref(req))).build())
                        .build(),
                ));
            }
            let mut ok = ResponseBuilder::new().description(route.summary);
            if let Some(resp) = route.response {
                ok = ok.content("application/json", ContentBuilder::new().schema(Some(schema_ref(resp))).build());
            }
            let error = || {
                ResponseBuilder::new()
                    .description("Refused; the message names what is wrong")
                    .content("application/json", ContentBuilder::new().schema(Some(schema_ref("ErrorBody"))).build())
                    .build()
            };
            op = op
                .response(route.status.to_string(), ok.build())
                .response("400", error())
                .response("401", error())
                .response("403", error())
                .response("404", error());
            if matches!(route.status, 202) {
                op = op.response("409", error());
            }
            paths = paths.path(route.path.clone(), PathItem::new(method(&route.method), op.build()));
        }
        let components = ComponentsBuilder::new()
            .schema_from::<ErrorBody>()
            .schema_from::<GpsCoordinates>()
            .schema_from::<GpsCoordinatesInput>()
            .schema_from::<InstallationModel>()
            .schema_from::<CreateInstallationRequest>()
            .schema_from::<SubscriptionFilter>()
            .schema_from::<EventSubscriptionModel>()
            .schema_from::<CreateEventSubscriptionRequest>()
            .schema_from::<InvitationRequest>()
            .schema_from::<InvitationModel>()
            .schema_from::<UserModel>()
            .schema_from::<AssociateStationRequest>()
            .schema_from::<SetChargeModeRequest>()
            .schema_from::<UpdateStationRequest>()
            .schema_from::<ChargingStationModel>()
            .schema_from::<GridMeterModel>()
            .schema_from::<MeasureModel>()
            .schema_from::<LogModel>()
            .schema_from::<RangeRequest>()
            .schema_from::<AggregationPoint>()
            .schema_from::<LogValue>()
            .schema_from::<LogCount>()
            .schema_from::<AuthorizeTicRequest>()
            .schema_from::<TariffValue>()
            .schema_from::<TariffModel>()
            .schema_from::<TariffPriceRequest>()
            .schema_from::<GridEvent>()
            .security_scheme(
                "subscriptionKey",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Ocp-Apim-Subscription-Key"))),
            )
            .security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
            )
            .build();
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("Witty-Home API (witty-bff simulator)")
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(
                        "The routes of the Witty-Home API document, as the embedded simulator serves them.",
                    )),
            )
            .paths(paths.build())
            .components(Some(components))
            .security(Some([
                SecurityRequirement::new("subscriptionKey", Vec::<String>::new()),
                SecurityRequirement::new("bearer", Vec::<String>::new()),
            ]))
            .build()
    })
}

pub async fn serve() -> Json<&'static OpenApi> {
    Json(document())
}
