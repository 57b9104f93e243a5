namespace PgLlm;

/// <summary>
/// Marks a column as an image. A prompt placeholder naming it sends the value to the model as an image
/// content part at that position, never as text: a <c>string</c> property holds an <c>http(s)</c> URL or a
/// <c>data:</c> URL, a <c>byte[]</c> property (a <c>bytea</c> column) holds the image itself (PNG, JPEG, GIF or WebP),
/// sent as a data URL.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Parameter, AllowMultiple = false, Inherited = false)]
public sealed class LlmImageAttribute : Attribute
{
}
