//! Message selectors for the core: the selector language
//! (`halyard-selector`) applied to the message model, behind the core's
//! [`Select`] seam.

use std::sync::Arc;

use halyard_selector::{Options, ParseError, Selector};

use super::Service;
use crate::core::Select;
use crate::model::{Message, Selectable};

/// A parsed selector, as the core's dispatchers call it.
#[derive(Debug)]
struct MessageSelector(Selector);

impl Select for MessageSelector {
    fn selects(&self, message: &Message, deliveries: u32) -> bool {
        self.0.matches(&Selectable {
            message,
            deliveries,
        })
    }

    fn text(&self) -> &str {
        self.0.text()
    }
}

impl Service {
    /// Parses a selector with the broker's `[selectors]` settings; `None`
    /// for an empty one (JMS: no selector).
    pub(crate) fn selector(&self, text: &str) -> Result<Option<Arc<dyn Select>>, ParseError> {
        parse(text, &self.core.config.selectors)
    }

    /// Parses a durable subscription's stored selector. It was accepted
    /// when the subscription was made, so a `max-length` lowered since
    /// does not apply to it.
    pub(crate) fn stored_selector(
        &self,
        text: &str,
    ) -> Result<Option<Arc<dyn Select>>, ParseError> {
        let config = crate::config::SelectorsConfig {
            max_length: usize::MAX,
            ..self.core.config.selectors.clone()
        };
        parse(text, &config)
    }
}

/// Parses a selector with `[selectors]` settings `config`, as the core's
/// dispatchers call it; `None` for an empty one. Apart from [`Service`] so
/// the dispatch benchmark (`crate::bench_support`) judges messages exactly
/// as subscriptions do.
pub(crate) fn parse(
    text: &str,
    config: &crate::config::SelectorsConfig,
) -> Result<Option<Arc<dyn Select>>, ParseError> {
    let options = Options {
        convert_string_expressions: config.convert_string_expressions,
        max_len: config.max_length,
    };
    Ok(Selector::parse_optional(text, &options)?
        .map(|s| Arc::new(MessageSelector(s)) as Arc<dyn Select>))
}
