//! The crate's one DynamoDB request layer. Every read and write goes through these helpers,
//! so a request's shape (key, condition, placeholders, consistency) and its error handling
//! are written once: `StoreError::dynamo` formats every SDK failure, `condition_failed` is the
//! one test for a refused condition, and attributes are read through `Attributes`.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::builders::{DeleteBuilder, UpdateBuilder};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TableStatus, TransactWriteItem, Update,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::str::FromStr;

use crate::error::condition_failed;
use crate::keys::{ItemKey, PK, SK};
use crate::tenants::Page;
use crate::{Store, StoreError};

/// One item's attributes, as DynamoDB sends and takes them.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The condition every create uses: no item has this key yet.
pub(crate) const ITEM_IS_NEW: &str = "attribute_not_exists(PK)";
/// The condition of a change to an existing item: the item is there.
pub(crate) const ITEM_EXISTS: &str = "attribute_exists(PK)";

/// Reading attributes of an item. An attribute that is absent or of another type reads as
/// `None`; the required readers turn that into `Corrupt`, naming the attribute.
pub(crate) trait Attributes {
    fn optional_string(&self, name: &str) -> Option<String>;
    fn optional_number<T: FromStr>(&self, name: &str) -> Option<T>;
    fn optional_bool(&self, name: &str) -> Option<bool>;

    fn string(&self, name: &str) -> Result<String, StoreError> {
        self.optional_string(name).ok_or_else(|| missing(name))
    }

    fn number<T: FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.optional_number(name).ok_or_else(|| missing(name))
    }
}

fn missing(name: &str) -> StoreError {
    StoreError::Corrupt(format!("the stored item has no readable {name}"))
}

impl Attributes for Item {
    fn optional_string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.as_s().ok()).cloned()
    }

    fn optional_number<T: FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
    }

    fn optional_bool(&self, name: &str) -> Option<bool> {
        self.get(name).and_then(|v| v.as_bool().ok()).copied()
    }
}

/// An expression (condition, update, key condition or filter) with the placeholders it uses.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    text: String,
    names: HashMap<String, String>,
    values: Item,
}

impl Expr {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), names: HashMap::new(), values: HashMap::new() }
    }

    /// The same placeholders in another expression (one built up with them).
    pub(crate) fn with_text(self, text: impl Into<String>) -> Self {
        Self { text: text.into(), ..self }
    }

    /// This expression `AND` `more` (which may use more placeholders).
    pub(crate) fn and(self, more: &str) -> Self {
        let text = format!("{} AND {more}", self.text);
        self.with_text(text)
    }

    /// This update's `SET` clause with one more assignment.
    pub(crate) fn and_set(self, assignment: &str) -> Self {
        let text = format!("{}, {assignment}", self.text);
        self.with_text(text)
    }

    /// `#placeholder` stands for the attribute `attribute`.
    pub(crate) fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn values(&self) -> &Item {
        &self.values
    }

    /// `:placeholder` stands for `value`.
    pub(crate) fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }
}

/// The placeholders of a request's expressions, together, as the SDK takes them (none
/// rather than empty: DynamoDB refuses an empty map).
type Placeholders = (Option<HashMap<String, String>>, Option<Item>);

fn placeholders<'a>(expressions: impl IntoIterator<Item = &'a Expr>) -> Placeholders {
    let (mut names, mut values) = (HashMap::new(), HashMap::new());
    for expression in expressions {
        names.extend(expression.names.clone());
        values.extend(expression.values.clone());
    }
    ((!names.is_empty()).then_some(names), (!values.is_empty()).then_some(values))
}

/// The request builders that take a condition: each gets it, with its placeholders and
/// those of the request's other expressions, through `conditioned`.
trait Conditioned: Sized {
    fn set_condition(self, condition: Option<String>) -> Self;
    fn set_placeholders(self, placeholders: Placeholders) -> Self;

    fn conditioned<'a>(
        self,
        condition: Option<&'a Expr>,
        others: impl IntoIterator<Item = &'a Expr>,
    ) -> Self {
        self.set_placeholders(placeholders(others.into_iter().chain(condition)))
            .set_condition(condition.map(|c| c.text.clone()))
    }
}

macro_rules! conditioned {
    ($($builder:ty),+) => {$(
        impl Conditioned for $builder {
            fn set_condition(self, condition: Option<String>) -> Self {
                self.set_condition_expression(condition)
            }

            fn set_placeholders(self, (names, values): Placeholders) -> Self {
                self.set_expression_attribute_names(names).set_expression_attribute_values(values)
            }
        }
    )+};
}

conditioned!(
    PutItemFluentBuilder,
    UpdateItemFluentBuilder,
    DeleteItemFluentBuilder,
    DeleteBuilder,
    UpdateBuilder
);

/// A conditional write that did not happen because its condition did not hold. It keeps the
/// error, for the writes that treat that as a failure (`??`).
#[derive(Debug)]
pub(crate) struct Refused(StoreError);

impl From<Refused> for StoreError {
    fn from(refused: Refused) -> Self {
        refused.0
    }
}

/// Splits a request's outcome into done, refused by its condition, or failed.
fn settle<T, E, R>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<Result<T, Refused>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(output) => Ok(Ok(output)),
        Err(error) if condition_failed(&error) => Ok(Err(Refused(StoreError::dynamo(operation, error)))),
        Err(error) => Err(StoreError::dynamo(operation, error)),
    }
}

/// A transaction DynamoDB cancelled, with each step's reason (`None` for a step that was fine).
#[derive(Debug)]
pub(crate) struct Cancelled {
    reasons: Vec<Option<String>>,
    error: StoreError,
}

impl Cancelled {
    /// Whether step `step` (from 0) was refused by its condition.
    pub(crate) fn refused(&self, step: usize) -> bool {
        self.reasons.get(step).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed")
    }
}

impl From<Cancelled> for StoreError {
    fn from(cancelled: Cancelled) -> Self {
        cancelled.error
    }
}

/// Whether a read must see every write acknowledged before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    Consistent,
    Eventual,
}

/// A query of one partition, of the table or of an index, one page at a time.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    index: Option<&'static str>,
    key: Expr,
    filter: Option<Expr>,
    limit: Option<i32>,
    start: Option<Item>,
    descending: bool,
    consistent: bool,
}

impl Query {
    pub(crate) fn table(key: Expr) -> Self {
        Self {
            index: None,
            key,
            filter: None,
            limit: None,
            start: None,
            descending: false,
            consistent: false,
        }
    }

    /// Sort keys from the highest down.
    pub(crate) fn descending(self) -> Self {
        Self { descending: true, ..self }
    }

    /// Sees every write acknowledged before it (table queries only: an index cannot).
    pub(crate) fn consistent(self) -> Self {
        Self { consistent: true, ..self }
    }

    pub(crate) fn index(index: &'static str, key: Expr) -> Self {
        Self { index: Some(index), ..Self::table(key) }
    }

    pub(crate) fn filter(self, filter: Option<Expr>) -> Self {
        Self { filter, ..self }
    }

    pub(crate) fn limit(self, limit: i32) -> Self {
        Self { limit: Some(limit), ..self }
    }

    /// Resumes after the item with this key (the previous page's last).
    pub(crate) fn start(self, start: Option<Item>) -> Self {
        Self { start, ..self }
    }
}

/// The opaque cursor naming the last item of a page by one of its key attributes.
pub(crate) fn encode_cursor(last: &Item, attribute: &str) -> Option<String> {
    last.optional_string(attribute).map(|value| URL_SAFE_NO_PAD.encode(value))
}

/// The key attribute a cursor names; `BadCursor` for anything `encode_cursor` did not make.
pub(crate) fn decode_cursor(cursor: &str) -> Result<String, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)
}

pub(crate) fn decode<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(StoreError::from)
}

impl Store {
    /// The table's status (fails when there is no such table).
    pub(crate) async fn table_status(&self) -> Result<Option<TableStatus>, StoreError> {
        let output = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DescribeTable", e))?;
        Ok(output.table.and_then(|t| t.table_status))
    }

    /// Reads one item's attributes (only those `projection` names, when it names some).
    pub(crate) async fn read_item(
        &self,
        key: ItemKey,
        read: Read,
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.into_item()))
            .set_consistent_read((read == Read::Consistent).then_some(true))
            .set_projection_expression(projection.map(str::to_owned))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(output.item)
    }

    /// Reads one item, strongly consistent, and decodes it.
    pub(crate) async fn get_item<T: DeserializeOwned>(&self, key: ItemKey) -> Result<Option<T>, StoreError> {
        self.read_item(key, Read::Consistent, None).await?.map(decode).transpose()
    }

    /// Writes `item`, replacing any item with its key, if `condition` (when given) holds.
    pub(crate) async fn put(
        &self,
        item: Item,
        condition: Option<Expr>,
    ) -> Result<Result<(), Refused>, StoreError> {
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let result = put.conditioned(condition.as_ref(), []).send().await;
        Ok(settle("PutItem", result)?.map(|_| ()))
    }

    /// Creates `item` if its key is free; otherwise leaves the stored item alone and returns
    /// it, from the same request (so "was it there, and with what" is one round trip).
    pub(crate) async fn put_new_or_read(&self, item: Item) -> Result<Option<Item>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(ITEM_IS_NEW)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let existing = failed.item().cloned().unwrap_or_default();
                    Ok(Some(existing))
                }
                _ => Err(StoreError::dynamo("PutItem", error)),
            },
        }
    }

    /// Applies `update` to the item with `key` if `condition` (when given) holds, and returns
    /// the attributes `returning` asks for.
    pub(crate) async fn update(
        &self,
        key: ItemKey,
        update: Expr,
        condition: Option<Expr>,
        returning: Option<ReturnValue>,
    ) -> Result<Result<Option<Item>, Refused>, StoreError> {
        let request = self.client.update_item().table_name(&self.table).set_key(Some(key.into_item()));
        let request = request.conditioned(condition.as_ref(), [&update]).update_expression(update.text);
        let result = request.set_return_values(returning).send().await;
        Ok(settle("UpdateItem", result)?.map(|output| output.attributes))
    }

    /// Deletes the item with `key` if `condition` (when given) holds.
    pub(crate) async fn delete(
        &self,
        key: ItemKey,
        condition: Option<Expr>,
    ) -> Result<Result<(), Refused>, StoreError> {
        let delete = self.client.delete_item().table_name(&self.table).set_key(Some(key.into_item()));
        let result = delete.conditioned(condition.as_ref(), []).send().await;
        Ok(settle("DeleteItem", result)?.map(|_| ()))
    }

    /// One page of `query`'s items, decoded, and the key of the page's last item (none on the
    /// last page).
    pub(crate) async fn query_page<T: DeserializeOwned>(
        &self,
        query: Query,
    ) -> Result<(Vec<T>, Option<Item>), StoreError> {
        let (names, values) = placeholders(std::iter::once(&query.key).chain(&query.filter));
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(query.key.text)
            .set_filter_expression(query.filter.map(|f| f.text))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .set_limit(query.limit)
            .set_exclusive_start_key(query.start)
            .set_scan_index_forward(query.descending.then_some(false))
            .set_consistent_read(query.consistent.then_some(true))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        let items = output.items.unwrap_or_default().into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok((items, output.last_evaluated_key))
    }

    /// Every item of `query`, all pages.
    pub(crate) async fn query_all<T: DeserializeOwned>(
        &self,
        mut query: Query,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        loop {
            let (items, last) = self.query_page(query.clone()).await?;
            all.extend(items);
            match last {
                Some(last) => query.start = Some(last),
                None => return Ok(all),
            }
        }
    }

    /// One page of `query` as the API hands it out: its cursor names the last item by
    /// `cursor_attribute` (`decode_cursor` reads it back).
    pub(crate) async fn page<T: DeserializeOwned, U>(
        &self,
        query: Query,
        cursor_attribute: &str,
        shown: impl Fn(T) -> U,
    ) -> Result<Page<U>, StoreError> {
        let (items, last) = self.query_page::<T>(query).await?;
        let next_cursor = last.as_ref().and_then(|last| encode_cursor(last, cursor_attribute));
        Ok(Page { items: items.into_iter().map(shown).collect(), next_cursor })
    }

    /// A transaction step creating `item` only if its key is free.
    pub(crate) fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(ITEM_IS_NEW)
            .build()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .map_err(StoreError::request)
    }

    /// A transaction step writing `item` (replacing any item with its key) if `condition`
    /// (when given) holds.
    pub(crate) fn put_step(
        &self,
        item: Item,
        condition: Option<Expr>,
    ) -> Result<TransactWriteItem, StoreError> {
        let (names, values) = placeholders(condition.iter());
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(|c| c.text))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .map_err(StoreError::request)
    }

    /// A transaction step deleting the item with `key` if `condition` holds.
    pub(crate) fn delete_step(&self, key: ItemKey, condition: Expr) -> Result<TransactWriteItem, StoreError> {
        Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key.into_item()))
            .conditioned(Some(&condition), [])
            .build()
            .map(|delete| TransactWriteItem::builder().delete(delete).build())
            .map_err(StoreError::request)
    }

    /// A transaction step writing nothing, that cancels the transaction unless `condition`
    /// holds on the item with `key` (a write guarded by another item's state).
    pub(crate) fn check_step(&self, key: ItemKey, condition: Expr) -> Result<TransactWriteItem, StoreError> {
        let (names, values) = placeholders([&condition]);
        aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key.into_item()))
            .condition_expression(condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map(|check| TransactWriteItem::builder().condition_check(check).build())
            .map_err(StoreError::request)
    }

    /// A transaction step applying `update` to the item with `key` if `condition` holds.
    pub(crate) fn update_step(
        &self,
        key: ItemKey,
        update: Expr,
        condition: Expr,
    ) -> Result<TransactWriteItem, StoreError> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key.into_item()))
            .conditioned(Some(&condition), [&update])
            .update_expression(update.text)
            .build()
            .map(|update| TransactWriteItem::builder().update(update).build())
            .map_err(StoreError::request)
    }

    /// Reads several items in one strongly consistent round trip (`BatchGetItem`), answering
    /// in the order of `keys` (`None` for a key with no item). Keys DynamoDB leaves
    /// unprocessed (throttling) are asked again a few times before the read fails: a partial
    /// answer would read as "no such item", which for a deny entry means "allowed".
    pub(crate) async fn read_items(&self, keys: Vec<ItemKey>) -> Result<Vec<Option<Item>>, StoreError> {
        const ATTEMPTS: u32 = 4;
        let wanted: Vec<Item> = keys.into_iter().map(ItemKey::into_item).collect();
        let mut unique = wanted.clone();
        unique.dedup();
        let mut found: Vec<Item> = Vec::with_capacity(wanted.len());
        let mut pending = unique;
        for attempt in 0..ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(StoreError::request)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("BatchGetItem", e))?;
            found.extend(output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default());
            pending = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
        if !pending.is_empty() {
            let message = format!("{} keys left unprocessed after {ATTEMPTS} attempts", pending.len());
            return Err(StoreError::Dynamo { operation: "BatchGetItem", message });
        }
        let same_key = |item: &Item, key: &Item| item.get(PK) == key.get(PK) && item.get(SK) == key.get(SK);
        Ok(wanted.iter().map(|key| found.iter().find(|item| same_key(item, key)).cloned()).collect())
    }

    /// Runs `steps` as one transaction: all happen, or (`Cancelled`) none.
    pub(crate) async fn transact(
        &self,
        steps: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Cancelled>, StoreError> {
        let result = self.client.transact_write_items().set_transact_items(Some(steps)).send().await;
        let Err(error) = result else { return Ok(Ok(())) };
        let reasons = match error.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                cancelled.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
            }
            _ => return Err(StoreError::dynamo("TransactWriteItems", error)),
        };
        Ok(Err(Cancelled { reasons, error: StoreError::dynamo("TransactWriteItems", error) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::s;

    #[test]
    fn a_cursor_reads_back_as_the_attribute_it_names_and_nothing_else_is_one() {
        let last = HashMap::from([("SK".to_owned(), s("USER#01"))]);
        let cursor = encode_cursor(&last, "SK").expect("cursor");
        assert_eq!(decode_cursor(&cursor).expect("decodes"), "USER#01");
        assert!(encode_cursor(&last, "GSI1SK").is_none());
        assert!(matches!(decode_cursor("not base64!"), Err(StoreError::BadCursor)));
    }

    #[test]
    fn placeholders_join_the_expressions_and_are_absent_when_there_are_none() {
        assert_eq!(placeholders([&Expr::new(ITEM_EXISTS)]), (None, None));
        let update = Expr::new("SET #a = :a").name("#a", "a").value(":a", s("x"));
        let condition = Expr::new("#b = :b").name("#b", "b").value(":b", s("y")).and("c = :c");
        assert_eq!(condition.text, "#b = :b AND c = :c");
        let (names, values) = placeholders([&update, &condition]);
        assert_eq!(names.expect("names").len(), 2);
        assert_eq!(values.expect("values").len(), 2);
    }

    #[test]
    fn attributes_read_as_their_type_or_name_what_is_missing() {
        let item = HashMap::from([("n".to_owned(), AttributeValue::N("7".into())), ("s".to_owned(), s("x"))]);
        assert_eq!(item.number::<u16>("n").expect("number"), 7);
        assert_eq!(item.optional_string("n"), None);
        assert_eq!(item.string("s").expect("string"), "x");
        let missing = item.string("home").expect_err("missing");
        assert!(missing.to_string().contains("home"), "{missing}");
    }
}
